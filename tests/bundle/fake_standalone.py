"""A stand-in standalone session module (what real targets ship as standalone_session.py)."""


def open_session(folder, threads=None, profile_dir=None):
    raise NotImplementedError("the fake target has no standalone runtime")
