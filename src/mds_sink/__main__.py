from mds_sink.cli import main

main()
