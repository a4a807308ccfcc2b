from gridwatch.cli import app

app(prog_name="gridwatch")
