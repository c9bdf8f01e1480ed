from lanspan.cli import main

main()
