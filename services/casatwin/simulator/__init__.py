"""The fleet simulator: taxis, police units and intersection sensors on the city's roads."""
