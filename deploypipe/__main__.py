from deploypipe.cli import main

main()
