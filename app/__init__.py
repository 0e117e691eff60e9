"""secfm.app"""
