from shard.cli import main

raise SystemExit(main())
