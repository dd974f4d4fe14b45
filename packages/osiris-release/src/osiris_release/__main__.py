from osiris_release.cli import main

main()
