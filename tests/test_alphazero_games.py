"""AlphaGo / AlphaZero beyond tic-tac-toe: OpenSpiel's Connect-4 and 5x5 Go as the agent sees them (encodings,
symmetries), the arena's statistics against scipy, matches against OpenSpiel's MCTSBot, AlphaGo's supervised
first stage, and trained agents driven through `load_agent` and `zupu play`."""

import io
import json

import numpy as np
import pytest
import torch
from reference import need

from zupu.cli import main
from zupu.errors import GameError
from zupu.games import arena, load_agent, solve
from zupu.games.boards import board_game
from zupu.games.selfplay import teacher_play
from zupu.games.symmetry import transform
from zupu.recipes.alphazero import mcts_teacher, minimax_teacher
from zupu.train import launch
from zupu.train.threads import threads


def random_line(game, rng, length):
    state, moves = game.new_game().new_initial_state(), []
    for _ in range(length):
        if state.is_terminal():
            break
        moves.append(int(rng.choice(state.legal_actions())))
        state.apply_action(moves[-1])
    return state, moves


@pytest.mark.parametrize("name", ["connect_four", "go"])
def test_symmetric_lines_give_transformed_positions(name):
    """Play a random line and its image under each symmetry the game declares, in OpenSpiel itself: the image's
    encoding is the transformed encoding, its legal moves the mapped ones, its outcome the same. Connect-4 has
    only the mirror: a quarter turn is not a symmetry of its rules, and the check would fail for it."""
    need("pyspiel")
    game = board_game(name)
    rng = np.random.default_rng(0)
    for _ in range(6):
        state, moves = random_line(game, rng, int(rng.integers(1, 30)))
        for k in game.transforms:
            perm = game.action_permutation(k)
            where = {int(perm[a]): a for a in range(game.num_actions)}  # where transform k sends action a
            image = game.new_game().new_initial_state()
            for a in moves:
                image.apply_action(where[a])
            assert torch.equal(game.encode([image])[0][:2], transform(game.encode([state])[0][:2], k))
            assert sorted(image.legal_actions()) == sorted(where[a] for a in state.legal_actions())
            assert image.returns() == state.returns()
    assert len(game.transforms) == (2 if name == "connect_four" else 8)


def test_encoding_is_from_the_movers_view():
    need("pyspiel")
    go = board_game("go")
    state = go.new_game().new_initial_state()
    state.apply_action(12)  # black (player 0) takes the centre; white to move
    x = go.encode([state])[0]
    assert x.shape == (3, 5, 5) and x[1, 2, 2] == 1 and x[0].sum() == 0 and bool((x[2] == 1).all())
    c4 = board_game("connect_four")
    state = c4.new_game().new_initial_state()
    state.apply_action(3)
    assert c4.board(state)[-1][3] == "x" and c4.encode([state])[0, 1, 0, 3] == 1  # drawn bottom row, obs row 0
    with pytest.raises(GameError, match="a go state given to a connect_four agent"):
        c4.encode([go.new_game().new_initial_state()])


def test_elo_from_scores():  # the arena's Wilson interval is zupu.train.metrics', tested against scipy's
    assert arena.elo(0.75, 100) == pytest.approx(400 * np.log10(3))
    assert arena.elo(0.5, 10) == 0 and arena.elo(1.0, 10) == pytest.approx(400 * np.log10(19))  # p capped at 0.95


def test_a_strong_mcts_beats_a_weak_one_from_both_sides():
    need("pyspiel")
    game = board_game("connect_four")
    result = arena.match(arena.mcts_player(game, 300), arena.mcts_player(game, 3, seed=99), game, 20, 2)
    assert result["games"] == 20 and result["lo"] > 0.5 and min(result["first"], result["second"]) > 0.5
    again = arena.match(arena.mcts_player(game, 300), arena.mcts_player(game, 3, seed=99), game, 20, 2)
    assert again == result  # seeded bots: a match is reproducible


def test_teacher_games_carry_the_teachers_moves():
    """AlphaGo's stage-1 data: each position with the strong player's move probabilities and the outcome."""
    game = board_game("tic_tac_toe")
    planes, pi, z = teacher_play(minimax_teacher("tic_tac_toe"), game, 20, 2, np.random.default_rng(0))
    assert planes.shape[1:] == (2, 3, 3) and len(planes) == len(pi) == len(z) >= 20 * 5
    assert set(z.tolist()) <= {-1.0, 0.0, 1.0} and torch.allclose(pi.sum(-1), torch.ones(len(pi)))
    # the solver plays both sides after the random opening, so each outcome is the position's minimax value
    values = solve.solve(game.new_game())
    for x, value in zip(planes, z, strict=True):
        mine, theirs = np.flatnonzero(x[0].flatten()).tolist(), np.flatnonzero(x[1].flatten()).tolist()
        crosses, noughts = (mine, theirs) if len(mine) == len(theirs) else (theirs, mine)  # x moves on equal counts
        state = game.new_game().new_initial_state()
        for a in [m for i, c in enumerate(crosses) for m in (c, *noughts[i:i + 1])]:  # x, o, x, ...
            state.apply_action(a)
        assert values[solve.key(state)] * (1 if state.current_player() == 0 else -1) == value
    assert (z != 0).any() and (z == 0).any()  # some openings already lose, others draw
    state = game.new_game().new_initial_state()
    for a in (0, 4, 8):
        state.apply_action(a)
    assert np.flatnonzero(minimax_teacher("tic_tac_toe")([state], [0])[0]).tolist() == solve.optimal_actions(
        state, values) == [1, 3, 5, 7]
    need("pyspiel")
    c4 = board_game("connect_four")
    _, pi, _ = teacher_play(mcts_teacher(c4, 50, 0), c4, 4, 2, np.random.default_rng(0))
    assert pi.shape[1] == 7 and ((pi == 0) | (pi == 1)).all() and (pi.sum(-1) == 1).all()  # its move, one-hot


@pytest.fixture(scope="module", params=["connect-four", "go-5x5"])
def tiny_run(request, tmp_path_factory):
    need("pyspiel")
    from zupu import registry

    out = tmp_path_factory.mktemp(request.param)
    with threads(1):
        launch.train("alphazero", request.param, out,
                     overrides=dict(registry.get("alphazero").recipe(request.param).tiny))
    return out


def test_load_agent_moves_on_open_spiel_states(tiny_run):
    pyspiel = need("pyspiel")
    agent = load_agent(tiny_run)
    state = pyspiel.load_game(agent.game.spec).new_initial_state()
    for a in state.legal_actions()[1:3]:
        state.apply_action(a)
    history = state.history()
    assert agent.move(state) == agent.move(state) in state.legal_actions() and state.history() == history
    metrics = json.loads((tiny_run / "metrics.json").read_text())["metrics"]
    assert {"score_vs_mcts2", "score_vs_mcts2_lo", "score_vs_mcts2_as_first"} <= set(metrics)
    # Go's tiny run draws its Elo ladder; Connect-4's its stage-1 and self-play points (curves need two)
    figure = "elo.png" if agent.game.name == "go" else "curves.png"
    assert (tiny_run / "search_visits.png").stat().st_size > 0 and (tiny_run / figure).stat().st_size > 0


def test_play_refuses_illegal_moves_in_every_game(tiny_run, monkeypatch, capsys):
    agent = load_agent(tiny_run)
    bad = "7" if agent.game.column_actions else "26"  # past the last column / after Go's pass
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{bad}\nfoo\n3\nq\n"))
    assert main(["play", str(tiny_run), "--side", "x"]) == 0
    out = capsys.readouterr().out
    assert f"illegal move '{bad}': legal moves are 0, 1, 2" in out and "illegal move 'foo'" in out
    assert "agent plays" in out and "game abandoned" in out
    if agent.game.name == "go":
        assert "pass: 25" in out
    else:
        assert "\n0 1 2 3 4 5 6\n" in out  # the column numbers under the board


@pytest.mark.slow
def test_quick_go_beats_a_low_budget_mcts_with_confidence(tmp_path):
    need("pyspiel")
    with threads(1):
        result = launch.train("alphazero", "go-5x5", tmp_path, quick=True)
    m = result["metrics"]
    assert m["score_vs_mcts8_lo"] >= 0.5 and result["milestone"]["passed"], m
    assert m["score_vs_mcts32"] > 0.5, m  # and ahead of MCTSBot at its own budget (seed 0: 0.85)
