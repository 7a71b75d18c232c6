from infworld.cli import main

raise SystemExit(main())
