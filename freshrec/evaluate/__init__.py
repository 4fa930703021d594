"""Replay experiments: the A/B of training regimes (daily, hourly, online, hybrid) on a
time-ordered stream, and its report."""

from freshrec.evaluate.ab import ABConfig, ABResult, ArmResult, replay_ab
from freshrec.evaluate.report import write_report

__all__ = ["ABConfig", "ABResult", "ArmResult", "replay_ab", "write_report"]
