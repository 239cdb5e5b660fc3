"""Built-in agents, one file each; importing this package registers them."""
from offrl.algorithms import a2pr, awac, bc, cal_ql, cql, edac, famo2o, hybrid_ac, iql, rebrac, sac, sac_n, stock_ac, td3, td3_bc  # noqa: F401
