from pairgen.cli import main

main()
