from proxbox.cli import entry

entry()
