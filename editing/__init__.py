"""4D editing: schedules (key frame / key view) and the editor processes that run beside the NeRF trainer."""
