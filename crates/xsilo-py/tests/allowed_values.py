"""Classes the allow-list scenario of parties.py pickles (an importable
module, so that pickle names them by module and class)."""


class Allowed:
    def __init__(self, v):
        self.v = v


class Other:
    def __reduce__(self):
        # Were this rebuilt, it would run code: the receiver must refuse it.
        import os

        return (os.system, ("echo PWNED",))


class Unlisted:
    """Off the list: a party may still read back its own."""

    def __init__(self, v):
        self.v = v
