"""The base of every error that a user's input causes (a config value, a file, a dataset).

Its message names the file, key or value and says how to fix it. The command-line tools
print that message alone and exit with status 2 (detectron2's convention for a bad
argument); `RESNEXT_DET_DEBUG=1` prints the traceback as well. Errors of any other type
are bugs of ours and keep their traceback.
"""


class UserError(Exception):
    """Bad input: the message says which file, key or value, and what to do about it."""
