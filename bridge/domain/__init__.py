"""Pure domain: value objects, limit rules, errors and the ports the outside implements.

Nothing here performs I/O or imports a framework.
"""
