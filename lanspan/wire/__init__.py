"""lanspan.wire"""
