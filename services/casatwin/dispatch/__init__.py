"""Dispatch: the nearest available police unit, by road, in a closed loop with the simulator."""
