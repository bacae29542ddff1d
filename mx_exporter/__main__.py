from mx_exporter.cli import main

raise SystemExit(main())
