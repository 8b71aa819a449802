from django.urls import path

from hapairs import views

urlpatterns = [
    path("", views.home, name="home"),
]
