"""secfm.training"""
