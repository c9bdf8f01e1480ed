"""lanspan.config"""
