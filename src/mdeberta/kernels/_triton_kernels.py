"""The Triton kernels of :mod:`mdeberta.kernels.triton_attention` (imported only when used; see there)."""

import triton
import triton.language as tl


@triton.jit
def _sequence(CU, pid, H, T, VARLEN: tl.constexpr):
    """Where the (sequence, head) of program ``pid`` lives: its first row in the (rows, d) view of q/k/v/tables
    (B*H*T rows, head-major), its first token's column in the (T,) token axis, and its length.

    Padded batches (B, H, T, d): sequence b = pid // H, row0 = pid * T, all T tokens (padding masked by TOK).
    Packed (1, H, T, d) with cu_seqlens: sequence pid // H spans tokens CU[s] .. CU[s + 1] of head pid % H."""
    if VARLEN:
        seq = pid // H
        start = tl.load(CU + seq)
        n = tl.load(CU + seq + 1) - start
        row0 = (pid % H) * T + start
    else:
        start = 0
        n = T
        row0 = pid * T
    return row0, start, n


@triton.jit
def _scores(q, k, C2P, P2C, DIST, TOK, pid, row0, offs_m, offs_n, n, H, T, R, scale, VARLEN: tl.constexpr):
    """Scores of a (BM, BN) tile of one sequence (local indices < n); also returns the slot indices and masks."""
    s = tl.dot(q, tl.trans(k)) * scale
    in_m = offs_m < n
    in_n = offs_n < n
    valid = in_m[:, None] & in_n[None, :]
    slot = tl.load(DIST + offs_m[:, None] - offs_n[None, :] + T - 1, mask=valid, other=0)
    s += tl.load(C2P + (row0 + offs_m[:, None]).to(tl.int64) * R + slot, mask=valid, other=0.0)
    s += tl.load(P2C + (row0 + offs_n[None, :]).to(tl.int64) * R + slot, mask=valid, other=0.0)
    if VARLEN:  # every token of a packed sequence is real
        qlive = in_m
        klive = in_n
    else:
        tok = (pid // H) * T
        qlive = tl.load(TOK + tok + offs_m, mask=in_m, other=0) != 0
        klive = tl.load(TOK + tok + offs_n, mask=in_n, other=0) != 0
    s = tl.where(klive[None, :], s, float("-inf"))
    s = tl.where(qlive[:, None], s, 0.0)  # fully padded row: constant scores -> uniform, no gradient
    s = tl.where(in_n[None, :], s, float("-inf"))
    return s, slot, qlive, valid

@triton.jit
def _keep(seed, row0, start, offs_m, offs_n, T, dropout_p):
    """Attention-dropout keep mask of a tile: Philox on (seed, global pair index (row, key column) of the
    (B*H*T, T) score matrix), the same numbers in the forward and the backward, never stored. A packed batch
    draws what the dense (1, H, T, T) matrix would at the same places."""
    pair = (row0 + offs_m[:, None]).to(tl.int64) * T + (start + offs_n[None, :]).to(tl.int64)
    return tl.rand(seed, pair) >= dropout_p


@triton.jit
def _dropout_mask(OUT, seed, dropout_p, L, BM: tl.constexpr, BN: tl.constexpr):
    """The keep mask the kernels use, written out (tests compare against the reference with it)."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    bh = tl.program_id(2)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    keep = _keep(seed, bh * L, 0, offs_m, offs_n, L, dropout_p)
    ok = (offs_m[:, None] < L) & (offs_n[None, :] < L)
    tl.store(OUT + (bh.to(tl.int64) * L + offs_m[:, None]) * L + offs_n[None, :], keep.to(tl.int8), mask=ok)


@triton.jit
def _fwd(Q, K, V, C2P, P2C, DIST, TOK, CU, O, LSE, H, L, R, scale, seed, dropout_p, BUCKET,
         D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, DROPOUT: tl.constexpr, VARLEN: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    row0, start, n = _sequence(CU, bh, H, L, VARLEN)
    if pid_m * BM >= n:  # a packed sequence shorter than the longest one
        return
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_d = tl.arange(0, D)
    rows_m = (row0 + offs_m).to(tl.int64)
    q = tl.load(Q + rows_m[:, None] * D + offs_d[None, :], mask=offs_m[:, None] < n, other=0.0)
    m_i = tl.full((BM,), float("-inf"), tl.float32)
    l_i = tl.zeros((BM,), tl.float32)
    acc = tl.zeros((BM, D), tl.float32)
    for start_n in range(0, n, BN):
        offs_n = start_n + tl.arange(0, BN)
        kv_mask = offs_n[:, None] < n
        rows_n = (row0 + offs_n).to(tl.int64)
        k = tl.load(K + rows_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(V + rows_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
        s, slot, qlive, valid = _scores(q, k, C2P, P2C, DIST, TOK, bh, row0, offs_m, offs_n, n, H, L, R, scale,
                                        VARLEN)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)  # the softmax normalises over every key, dropped ones too
        if DROPOUT:
            p = tl.where(_keep(seed, row0, start, offs_m, offs_n, L, dropout_p), p / (1.0 - dropout_p), 0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    acc = acc / l_i[:, None]
    tl.store(O + rows_m[:, None] * D + offs_d[None, :], acc.to(O.dtype.element_ty), mask=offs_m[:, None] < n)
    tl.store(LSE + rows_m, m_i + tl.log(l_i), mask=offs_m < n)

@triton.jit
def _tile_grad(q, k, v, do, lse, delta, C2P, P2C, DIST, TOK, bh, row0, start, offs_m, offs_n, n, H, L, R, scale,
               seed, dropout_p, DROPOUT: tl.constexpr, VARLEN: tl.constexpr):
    """Softmax probabilities as they multiplied v (dropped and rescaled), and the score gradient. With dropout
    O = (P*Z/(1-p)) V, so dP = Z/(1-p) * dO V^T, and delta = rowsum(dO * O) = rowsum(P * dP) still holds."""
    s, slot, qlive, valid = _scores(q, k, C2P, P2C, DIST, TOK, bh, row0, offs_m, offs_n, n, H, L, R, scale, VARLEN)
    p = tl.exp(s - lse[:, None])
    dp = tl.dot(do, tl.trans(v))
    p_used = p
    if DROPOUT:
        keep = _keep(seed, row0, start, offs_m, offs_n, L, dropout_p)
        dp = tl.where(keep, dp / (1.0 - dropout_p), 0.0)
        p_used = tl.where(keep, p / (1.0 - dropout_p), 0.0)
    ds = p * (dp - delta[:, None])
    ds = tl.where(qlive[:, None] & valid, ds, 0.0)
    return p_used, ds, slot

@triton.jit
def _query_rows(Q, DO, LSE, DELTA, row0, offs_m, offs_d, n, D: tl.constexpr):
    """What the backward needs of a block of query rows: q, dO, the row log-sum-exp and rowsum(dO * O)."""
    rows_m = (row0 + offs_m).to(tl.int64)
    row_mask = offs_m[:, None] < n
    q = tl.load(Q + rows_m[:, None] * D + offs_d[None, :], mask=row_mask, other=0.0)
    do = tl.load(DO + rows_m[:, None] * D + offs_d[None, :], mask=row_mask, other=0.0)
    lse = tl.load(LSE + rows_m, mask=offs_m < n, other=0.0)
    delta = tl.load(DELTA + rows_m, mask=offs_m < n, other=0.0)
    return rows_m, row_mask, q, do, lse, delta


@triton.jit
def _bwd_dq(Q, K, V, C2P, P2C, DIST, TOK, CU, DO, LSE, DELTA, DQ, DC2P, H, L, R, scale, seed, dropout_p, BUCKET,
            D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, DROPOUT: tl.constexpr, VARLEN: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    row0, start, n = _sequence(CU, bh, H, L, VARLEN)
    if pid_m * BM >= n:
        return
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_d = tl.arange(0, D)
    rows_m, row_mask, q, do, lse, delta = _query_rows(Q, DO, LSE, DELTA, row0, offs_m, offs_d, n, D)
    dq = tl.zeros((BM, D), tl.float32)
    cols = tl.arange(0, BN)
    for start_n in range(0, n, BN):
        offs_n = start_n + cols
        kv_mask = offs_n[:, None] < n
        rows_n = (row0 + offs_n).to(tl.int64)
        k = tl.load(K + rows_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(V + rows_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
        p, ds, slot = _tile_grad(q, k, v, do, lse, delta, C2P, P2C, DIST, TOK, bh, row0, start, offs_m, offs_n, n,
                                 H, L, R, scale, seed, dropout_p, DROPOUT, VARLEN)
        dq += tl.dot(ds.to(k.dtype), k) * scale
        # dC2P[i, slot(i, j)] += ds[i, j], one key column at a time (distinct rows -> distinct addresses).
        for c in tl.static_range(BN):
            pick = cols[None, :] == c
            col_ds = tl.sum(tl.where(pick, ds, 0.0), 1)
            col_slot = tl.sum(tl.where(pick, slot, 0), 1)
            ptr = DC2P + rows_m * R + col_slot
            ok = (offs_m < n) & ((offs_m * 0 + start_n + c) < n)
            tl.store(ptr, tl.load(ptr, mask=ok, other=0.0) + col_ds, mask=ok)
    tl.store(DQ + rows_m[:, None] * D + offs_d[None, :], dq.to(DQ.dtype.element_ty), mask=row_mask)

@triton.jit
def _bwd_dkdv(Q, K, V, C2P, P2C, DIST, TOK, CU, DO, LSE, DELTA, DK, DV, DP2C, H, L, R, scale, seed, dropout_p, BUCKET,
              D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, DROPOUT: tl.constexpr, VARLEN: tl.constexpr):
    pid_n = tl.program_id(0)
    bh = tl.program_id(1)
    row0, start, n = _sequence(CU, bh, H, L, VARLEN)
    if pid_n * BN >= n:
        return
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_d = tl.arange(0, D)
    rows_n = (row0 + offs_n).to(tl.int64)
    col_mask = offs_n[:, None] < n
    k = tl.load(K + rows_n[:, None] * D + offs_d[None, :], mask=col_mask, other=0.0)
    v = tl.load(V + rows_n[:, None] * D + offs_d[None, :], mask=col_mask, other=0.0)
    dk = tl.zeros((BN, D), tl.float32)
    dv = tl.zeros((BN, D), tl.float32)
    rows = tl.arange(0, BM)
    for start_m in range(0, n, BM):
        offs_m = start_m + rows
        rows_m, row_mask, q, do, lse, delta = _query_rows(Q, DO, LSE, DELTA, row0, offs_m, offs_d, n, D)
        p, ds, slot = _tile_grad(q, k, v, do, lse, delta, C2P, P2C, DIST, TOK, bh, row0, start, offs_m, offs_n, n,
                                 H, L, R, scale, seed, dropout_p, DROPOUT, VARLEN)
        p = tl.where(row_mask, p, 0.0)
        dv += tl.dot(tl.trans(p).to(do.dtype), do)
        dk += tl.dot(tl.trans(ds).to(q.dtype), q) * scale
        # dP2C[j, slot(i, j)] += ds[i, j], one query row at a time (distinct keys -> distinct addresses).
        for r in tl.static_range(BM):
            pick = rows[:, None] == r
            row_ds = tl.sum(tl.where(pick, ds, 0.0), 0)
            row_slot = tl.sum(tl.where(pick, slot, 0), 0)
            ptr = DP2C + rows_n * R + row_slot
            ok = (offs_n < n) & ((offs_n * 0 + start_m + r) < n)
            tl.store(ptr, tl.load(ptr, mask=ok, other=0.0) + row_ds, mask=ok)
    tl.store(DK + rows_n[:, None] * D + offs_d[None, :], dk.to(DK.dtype.element_ty), mask=col_mask)
    tl.store(DV + rows_n[:, None] * D + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=col_mask)

