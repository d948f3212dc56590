"""Privacy: label DP, DP-SGD, InstaHide and its attack, pruning as DP, MID, federated training (METHODS section 6)."""
