"""Edge/cloud partitioning (Neurosurgeon, Edgent): cut points of a DAG, per-layer costs measured
or predicted, network profiles, the split-point search, split builds and the split runtime.

T(p) = T_edge(p) + T_transfer(p) + T_cloud(p);  E(p) = E_edge(p) + E_transfer(p).
Submodules are imported where used, so `import deploypipe.partition` loads nothing heavy.
"""
