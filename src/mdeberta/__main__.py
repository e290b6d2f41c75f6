from mdeberta.cli import main

raise SystemExit(main())
