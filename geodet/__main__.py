from geodet.cli import main

raise SystemExit(main())
