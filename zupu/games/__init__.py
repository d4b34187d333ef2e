"""Games and the agents that play them.

    tictactoe.py  tic-tac-toe with OpenSpiel's state interface (OpenSpiel's own states work everywhere too)
    boards.py     the games the agent knows and how a position becomes the network's input
    symmetry.py   the 8 symmetries of a square board, for data augmentation
    solve.py      full minimax: reachable positions, optimal moves, every line against a fixed policy
    selfplay.py   self-play games into a replay buffer
    agent.py      `load_agent(run_dir).move(state)`: network + tree search (zupu.sampling.mcts)
"""

from zupu.games.agent import Agent, load_agent
from zupu.games.tictactoe import TicTacToe

__all__ = ["Agent", "TicTacToe", "load_agent"]
