"""lanspan.switch"""
