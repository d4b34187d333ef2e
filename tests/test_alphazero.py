"""AlphaZero on tic-tac-toe: the game against OpenSpiel's, the exact position count, PUCT search, the board's
symmetries, the trained agent's API, `zupu play`, and the quick recipe's proven milestone."""

import itertools
import json

import numpy as np
import pytest
import torch
from reference import need

from zupu.cli import main
from zupu.errors import GameError, IllegalMove
from zupu.games import TicTacToe, load_agent, solve
from zupu.games.boards import board_game
from zupu.games.symmetry import COUNT, augment, cell_permutation, map_action, transform
from zupu.sampling.mcts import MCTS, best_index
from zupu.train import launch
from zupu.train.threads import threads

GAME = TicTacToe()


def play(*actions):
    state = GAME.new_initial_state()
    for a in actions:
        state.apply_action(a)
    return state


def uniform(states):
    """A network that knows nothing: equal priors, value 0; only finished games tell the search anything."""
    return np.full((len(states), 9), 1 / 9), np.zeros(len(states))


def test_reachable_positions_counted_by_full_minimax():
    found = solve.positions(GAME)
    finished = [s for s in found.values() if s.is_terminal()]
    assert (len(found), len(found) - len(finished), len(finished)) == (5478, 4520, 958)
    values = solve.solve(GAME)
    assert values[solve.key(GAME.new_initial_state())] == 0  # perfect play draws
    assert solve.optimal_actions(play(0, 4, 8), values) == [1, 3, 5, 7]  # o must take an edge, not a corner


def test_every_line_against_a_policy():
    values = solve.solve(GAME)
    perfect = lambda state: solve.optimal_actions(state, values)[0]  # noqa: E731
    first_free = lambda state: state.legal_actions()[0]  # noqa: E731
    for player in (0, 1):
        assert solve.lines_against(GAME, perfect, player)["loss"] == 0
        assert solve.lines_against(GAME, first_free, player)["loss"] > 0  # the check can fail


@pytest.mark.parametrize(("moves", "best"), [((0, 3, 1, 4), 2),  # x wins at once on the top row
                                             ((0, 4, 8, 2), 6),  # x must block o's diagonal 2-4-6
                                             ((4, 0, 2, 6), 3)])  # o wins at once on the left column
def test_search_with_a_uniform_prior_finds_the_known_best_move(moves, best):
    state = play(*moves)
    root = MCTS(uniform, 9, simulations=400).search([state])[0]
    assert int(root.actions[np.argmax(root.visits)]) == best
    assert root.count == 401 and root.visits.sum() == 400


def test_search_is_the_same_alone_or_batched():
    states = [play(0, 4, 8), play(4), play(0, 3, 1, 4)]
    mcts = MCTS(uniform, 9, simulations=50)
    together = mcts.search(states)
    for state, root in zip(states, together, strict=True):
        assert np.array_equal(mcts.search([state])[0].visits, root.visits)
    with pytest.raises(ValueError, match="terminal"):
        mcts.search([play(0, 3, 1, 4, 2)])


def test_root_noise_and_temperature():
    mcts = MCTS(uniform, 9, simulations=30, dirichlet_alpha=0.3, dirichlet_epsilon=0.25)
    root = mcts.search([play()], np.random.default_rng(0))[0]
    assert not np.allclose(root.prior, 1 / 9) and root.prior.sum() == pytest.approx(1)
    pi = mcts.policy(root, 1.0)
    assert pi.sum() == pytest.approx(1) and np.allclose(pi[root.actions], root.visits / root.visits.sum())
    greedy = mcts.policy(root, 0.0)
    best = root.actions[best_index(root)]  # the most visited; a tie goes to the higher prior
    assert greedy.max() == 1 and greedy.argmax() == best and root.visits[best_index(root)] == root.visits.max()


def test_symmetries_map_moves_boards_and_outcomes():
    game = board_game("tic_tac_toe")
    assert len({tuple(cell_permutation(3, k).tolist()) for k in range(COUNT)}) == COUNT  # 8 distinct
    rng = np.random.default_rng(0)
    for _ in range(20):
        state, moves = play(), []
        for _ in range(int(rng.integers(1, 9))):
            if state.is_terminal():
                break
            moves.append(int(rng.choice(state.legal_actions())))
            state.apply_action(moves[-1])
        for k in range(COUNT):
            image = play(*(map_action(a, 3, k) for a in moves))
            assert sorted(image.legal_actions()) == sorted(map_action(a, 3, k) for a in state.legal_actions())
            assert torch.equal(game.encode([image])[0], transform(game.encode([state])[0], k))
            assert image.returns() == state.returns()
    planes, policy = torch.rand(5, 2, 3, 3), torch.rand(5, 9)
    ks = torch.tensor([0, 3, 4, 7, 5])
    p2, pi2 = augment(planes, policy, ks, range(COUNT), game.action_permutation)
    for i, k in enumerate(ks.tolist()):
        assert torch.equal(p2[i], transform(planes[i], k))
        assert torch.equal(pi2[i], transform(policy[i].view(3, 3), k).flatten())


def test_illegal_moves_are_refused():
    state = play(4)
    with pytest.raises(IllegalMove, match=r"4 is not a legal move here \(legal moves are \[0, 1, 2, 3, 5"):
        state.apply_action(4)
    with pytest.raises(IllegalMove, match="the game is over"):
        play(0, 3, 1, 4, 2).apply_action(8)


def test_same_rules_and_observations_as_open_spiel():
    pyspiel = need("pyspiel")
    theirs = pyspiel.load_game("tic_tac_toe")
    assert (theirs.num_distinct_actions(), theirs.observation_tensor_shape()) == (9, [3, 3, 3])
    stack, seen = [(GAME.new_initial_state(), theirs.new_initial_state())], set()
    while stack:
        ours, spiel = stack.pop()
        if solve.key(ours) in seen:
            continue
        seen.add(solve.key(ours))
        assert str(ours) == str(spiel) and ours.is_terminal() == spiel.is_terminal()
        assert ours.returns() == spiel.returns() and ours.current_player() == spiel.current_player()
        assert ours.observation_tensor(0) == spiel.observation_tensor(0) == spiel.observation_tensor(1)
        assert ours.legal_actions() == spiel.legal_actions()
        for a in ours.legal_actions():
            o, s = ours.clone(), spiel.clone()
            o.apply_action(a)
            s.apply_action(a)
            stack.append((o, s))
    assert len(seen) == len(solve.positions(theirs)) == 5478


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("alphazero")
    with threads(1):
        launch.train("alphazero", "tic-tac-toe", out, overrides={"generations": 2, "channels": 8, "blocks": 1,
                                                                 "games_per_generation": 8, "train_steps": 10,
                                                                 "eval_simulations": 4})
    return out


def test_load_agent_plays_as_its_run_was_proven(tiny_run):
    agent = load_agent(tiny_run)
    assert agent.mcts.simulations == 4
    metrics = json.loads((tiny_run / "metrics.json").read_text())["metrics"]
    assert metrics["positions"] == 4520
    state = play(0, 4)
    assert agent.move(state) == agent.move(state) in state.legal_actions()
    assert state.history() == [0, 4]  # the search works on copies
    # the agent alone, move by move, plays the lines the recipe enumerated in one batch: same outcome counts
    for player, side in enumerate("xo"):
        lines = solve.lines_against(GAME, agent.move, player)
        assert (lines["loss"], sum(lines.values())) == (metrics[f"losses_as_{side}"], metrics[f"lines_as_{side}"])
    with pytest.raises(IllegalMove, match="the game is over"):
        agent.move(play(0, 3, 1, 4, 2))
    assert load_agent(tiny_run, simulations=3).mcts.simulations == 3
    assert (tiny_run / "search_visits.png").stat().st_size > 0 and (tiny_run / "curves.png").stat().st_size > 0


def test_load_agent_takes_open_spiel_states(tiny_run):
    pyspiel = need("pyspiel")
    agent = load_agent(tiny_run)
    for moves in [(), (4,), (0, 4, 8), (0, 3, 1)]:
        spiel = pyspiel.load_game("tic_tac_toe").new_initial_state()
        for a in moves:
            spiel.apply_action(a)
        assert agent.move(spiel) == agent.move(play(*moves))
    with pytest.raises(GameError, match="a connect_four state given to a tic_tac_toe agent"):
        agent.move(pyspiel.load_game("connect_four").new_initial_state())


def test_load_agent_refuses_a_run_that_plays_no_game(tmp_path):
    from zupu import create
    from zupu.checkpoint import save_model

    save_model(create("perceptron", "tiny"), tmp_path, {"member": "perceptron", "recipe": "logic-gates",
                                                         "settings": {}})
    with pytest.raises(GameError, match="plays no game"):
        load_agent(tmp_path)


def test_play_in_the_terminal(tiny_run, monkeypatch, capsys):
    import io

    # refused input first, then every cell in turn: the taken ones are refused too, the free ones played
    moves = "9\nfoo\n" + "\n".join(str(a) for a in itertools.chain(range(9), range(9))) + "\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(moves))
    assert main(["play", str(tiny_run), "--side", "o"]) == 0
    out = capsys.readouterr().out
    assert "you play o" in out and "agent plays" in out
    assert "illegal move '9': legal moves are" in out and "illegal move 'foo'" in out
    assert out.rstrip().splitlines()[-1] in ("you win", "the agent wins", "draw")
    monkeypatch.setattr("sys.stdin", io.StringIO("q\n"))
    assert main(["play", str(tiny_run)]) == 0
    assert "game abandoned" in capsys.readouterr().out


@pytest.mark.slow
def test_quick_recipe_never_loses_and_plays_optimally(tmp_path):
    with threads(1):
        result = launch.train("alphazero", "tic-tac-toe", tmp_path, quick=True)
    m = result["metrics"]
    assert (m["losses_as_x"], m["losses_as_o"]) == (0, 0), m
    assert m["optimal_move_fraction"] >= 0.99 and result["milestone"]["passed"], m
