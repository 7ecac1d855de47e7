from clowder_ml.cli import main

main()
