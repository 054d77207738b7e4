"""MoE expert paging: the executor, routing traces and their analysis."""
