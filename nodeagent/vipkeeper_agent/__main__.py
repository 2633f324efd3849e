from vipkeeper_agent.cli import main

raise SystemExit(main())
