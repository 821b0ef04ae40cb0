from nerf_lab.summarize import main

raise SystemExit(main())
