"""lanspan.node"""
