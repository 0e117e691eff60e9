"""secfm.evals"""
