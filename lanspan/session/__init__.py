"""lanspan.session"""
