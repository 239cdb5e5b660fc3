"""Exact stock-augmented distributional DP: objectives in offrl.risk, MDPs, exact backward induction,
exact policy iteration on cyclic MDPs, value/policy iteration on a stock grid, the brute-force oracle,
a stochastic gridworld, and the tabular hybrid actor-critic (optimistic Q*-targeting critic, exponential-
weights actor, rare switching)."""
from offrl.tabular.brute_force import achievable_distributions, brute_force, objective_value
from offrl.tabular.dist import Categorical, Exact, Quantile
from offrl.tabular.exact import ExactSolution, stock_exact
from offrl.tabular.hybrid_ac import HybridACConfig, HybridRun, TabularHybridAC, combination_lock, lock_data
from offrl.tabular.grid import GridSolution, stock_bounds, stock_policy_iteration, stock_value_iteration
from offrl.tabular.mdp import TabularMDP, random_tree_mdp
from offrl.tabular.stock_dp import Solution, StockDP, naive_cvar_greedy, optimize, reachable_returns

__all__ = ["achievable_distributions", "brute_force", "objective_value", "Categorical", "Exact", "Quantile", "ExactSolution", "stock_exact",
           "GridSolution", "HybridACConfig", "HybridRun", "TabularHybridAC", "combination_lock", "lock_data", "stock_bounds", "stock_policy_iteration", "stock_value_iteration", "TabularMDP",
           "random_tree_mdp", "Solution", "StockDP", "naive_cvar_greedy", "optimize", "reachable_returns"]
