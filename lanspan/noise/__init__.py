"""lanspan.noise"""
