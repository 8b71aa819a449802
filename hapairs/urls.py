from django.urls import path

from hapairs import views
from hapairs.api import api

urlpatterns = [
    path("", views.home, name="home"),
    path("api/v1/", api.urls),
]
