"""`mindxh launch`: run a command on N local data-parallel ranks under msrun, supervised.

Kept free of imports: every rank's wrapper (`python -m mindxh.launch.worker`) imports this
package before its rank starts, so it must cost nothing.
"""
