"""One module per attack form, holding ``Params``: the schema of ``attacks.<form>``."""
