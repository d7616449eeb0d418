from ngw.cli import main

main(prog_name="ngw")
