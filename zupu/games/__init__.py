"""Games and the agents that play them.

    tictactoe.py  tic-tac-toe with OpenSpiel's state interface (OpenSpiel's own states work everywhere too)
    boards.py     the games the agent knows (tic-tac-toe; OpenSpiel's connect_four and 5x5 go) and how a position
                  becomes the network's input
    symmetry.py   the 8 symmetries of a square board (Connect-4 keeps only the mirror), for data augmentation
    solve.py      full minimax: reachable positions, optimal moves, every line against a fixed policy
    selfplay.py   self-play games into a replay buffer; a strong player's games for AlphaGo's supervised stage
    arena.py      matches against OpenSpiel's MCTSBot or another agent: scores, Wilson intervals, Elo
    figures.py    a search's visit counts on the board; the Elo and win-rate curves
    agent.py      `load_agent(run_dir).move(state)`: network + tree search (zupu.sampling.mcts)
"""

from zupu.games.agent import Agent, load_agent
from zupu.games.tictactoe import TicTacToe

__all__ = ["Agent", "TicTacToe", "load_agent"]
