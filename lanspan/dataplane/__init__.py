"""lanspan.dataplane"""
