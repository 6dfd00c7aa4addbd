"""metarm"""
