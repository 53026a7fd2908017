from nas.cli.main import main

raise SystemExit(main())
