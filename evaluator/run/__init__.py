"""One evaluation's run: the checkpoint feed, the unit stream and its plan, the work queue, the executors (in
process and on Ray), where the workers go, scale from zero, the driver that ties them, and the sweep."""
