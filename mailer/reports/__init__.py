"""An issue's figures, one module for every surface that shows them."""
