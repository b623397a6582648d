def load(*a, **k): raise NotImplementedError
