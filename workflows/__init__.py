"""secfm.workflows"""
