"""City packs: the road graph, signal plans, no-parking zones, police stations, sensors."""
