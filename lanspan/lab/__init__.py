"""lanspan.lab"""
