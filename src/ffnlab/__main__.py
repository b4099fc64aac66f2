from ffnlab.cli import main

raise SystemExit(main())
