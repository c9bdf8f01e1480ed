"""lanspan.control"""
